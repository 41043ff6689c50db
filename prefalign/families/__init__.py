"""Model families: each adapts one kind of model (classifier, language model, denoiser) to the shared core."""
