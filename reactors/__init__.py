"""The reactor: rules matching events, guards, actions and their audit."""
