"""Next-sample strategies: which photograph the clinician should label next."""
