"""Data layer: HAM10000 ingestion, lesion-aware splits, preprocessing, synthetic data, EDA."""
