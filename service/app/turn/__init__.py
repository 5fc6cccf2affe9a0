"""A turn: a user's message and the model's reply to it, begun in one transaction (begin, with
opening), relayed while the model talks (relay), and recorded in another (record)."""

from service.app.turn.begin import NewTurn, begin_regenerate, begin_turn, begin_user_turn
from service.app.turn.chat import Chat, Sent, begin_chat
from service.app.turn.models import find_model, list_models, resolve_model
from service.app.turn.plan import Answered, Params, Plan, ReplySpec
from service.app.turn.relay import CLIENT_LEFT, Replies, ReplyInFlight, Settled

__all__ = [
    "CLIENT_LEFT",
    "Answered",
    "Chat",
    "NewTurn",
    "Params",
    "Plan",
    "Replies",
    "ReplyInFlight",
    "ReplySpec",
    "Sent",
    "Settled",
    "begin_chat",
    "begin_regenerate",
    "begin_turn",
    "begin_user_turn",
    "find_model",
    "list_models",
    "resolve_model",
]
