"""Where text comes in and rendered replies go out: Matrix and the console."""
