"""A plugin whose import fails."""

raise ImportError("this plugin depends on something that is not installed")
