"""ferbench: rebuild the tables of FER papers from runs it trains itself."""

__version__ = "0.1.0"
