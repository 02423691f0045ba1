"""Data translation: read files into GeoDataFrames, feature storage, the OGC API."""
