"""The ktrain-like front end: get_model, Learner, Predictor, and config-driven runs."""

from flaxtrain.api.factory import get_learner, get_model, text_classifier
from flaxtrain.api.learner import Learner
from flaxtrain.api.model import Model
from flaxtrain.api.predictor import Predictor, get_predictor, load_predictor
from flaxtrain.api.transformer import Transformer

__all__ = ["Learner", "get_learner", "Model", "get_model", "text_classifier", "Predictor", "get_predictor", "load_predictor", "Transformer"]
