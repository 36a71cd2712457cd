"""Item intents from text: language-model embeddings of item text for SAERec."""
