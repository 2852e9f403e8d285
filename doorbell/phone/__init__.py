"""The phone side: an enrolled phone's keys, and verifying, opening and exporting footage."""
