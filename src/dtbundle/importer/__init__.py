"""``dtbundle import``: where the bundle lands (mapping), the plan, sinks, publishing, and the run."""
