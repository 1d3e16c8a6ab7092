"""Sample-quality and likelihood metrics, and the feature extractors they use."""
