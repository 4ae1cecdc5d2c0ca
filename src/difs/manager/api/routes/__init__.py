"""One router per entity; routes call one service function each and return typed models."""
