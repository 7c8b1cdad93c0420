"""Small helpers with no parbench imports and no torch: hashing, clocks, console, versions."""
