"""Random-weight models, built offline, for demos and tests only: their outputs are noise.

They load through the same Auto classes as hub checkpoints, so the code under test takes
the path real weights take. Configs name them as builtin://NAME (models/weights.py builds
each once into the weights cache); the names below are the stages' defaults, which a real
run replaces with real weights.
"""

DEMO_VLM = "builtin://tiny-llava"  # image + text -> text
DEMO_TEXT_LLM = "builtin://tiny-llama"  # text -> text
