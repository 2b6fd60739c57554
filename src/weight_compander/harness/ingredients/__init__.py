"""What a run is made of: data sets, models, augmentation, label noise, peer
reparameterizations, KURE, input corruptions and weight perturbations."""
