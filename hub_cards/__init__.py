"""Model-card templates, shipped inside the package as ``tmrl_vla.hub_cards``."""
