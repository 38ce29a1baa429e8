"""A plugin whose import fails, as a broken distribution's would."""

raise ImportError("this plugin needs a module that is not installed")
