"""The peers checkgate is measured against that need code of their own (Flower needs none)."""
