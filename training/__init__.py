"""Training side of Isotropic3D: rendering training views headless (``iso3d-render``), datasets, fine-tuning."""
