"""The state engine (render, validate, order, requisites, test mode) and state modules."""
