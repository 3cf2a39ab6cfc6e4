"""Person search over a gallery index as a small web service (FastAPI; `pip install "reidkit[serve]"`).

`create_app(index_path, run_dir)` builds the app and `serve(...)` runs it with uvicorn; both live in
`reidkit.serve.app`, which imports fastapi only when they are called. `uploads.py` bounds and decodes
uploads, `images.py` confines image files to their recorded folders, `model.py` embeds images.
"""

from reidkit.serve.app import create_app, serve

__all__ = ["create_app", "serve"]
