"""Data layer: HAM10000, image-folder and CSV ingestion, group-aware (lesion-aware) splits, one
prepared-split reader (kd_core.data.prepared), preprocessing, synthetic data, EDA."""
