"""Configuration: TOML → validated frozen dataclasses (``load_config``)."""

from est_gateway.config.load import OPERATIONS, load_config, parse_config
from est_gateway.config.model import AliasSettings, GatewayConfig, ServerSettings

__all__ = ["OPERATIONS", "AliasSettings", "GatewayConfig", "ServerSettings",
           "load_config", "parse_config"]
