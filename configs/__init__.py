"""Experiment configs (`get_config(arg) -> ConfigDict`, big_vision style); `common` holds what they share."""
