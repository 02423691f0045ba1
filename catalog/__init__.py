"""The catalogue: Flask app (pages, search, open APIs, OGC API mount), CLI and the store."""
