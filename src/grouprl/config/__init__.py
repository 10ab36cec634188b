"""Typed configuration: the schema (one documented field each) and its loader."""

from grouprl.config.load import ConfigError, algo_spec, dump_config, load_config, parse_override
from grouprl.config.schema import Config

__all__ = ["Config", "ConfigError", "algo_spec", "dump_config", "load_config", "parse_override"]
