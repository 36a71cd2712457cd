"""Trainers of the plugin's models (RecBole's Trainer contract)."""
