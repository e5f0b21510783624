"""Development tools beside the product: the demo, its virtual microphone, the docs generator."""
