"""The plugin's RecBole models. Each module holds one model; ``recbole_sae.registry`` imports them lazily."""
