"""``dtbundle export``: image requests, the plan (manifests only), and the run that writes the bundle."""
