"""kamen-router: routes paid virtual-goods orders from card shops to the
cheapest healthy upstream supplier, exactly once.

The public surface is small: the order API client, the outcome taxonomy and
the plugin contract. Everything else is the daemon's own machinery.
"""

__version__ = "0.1.0"
