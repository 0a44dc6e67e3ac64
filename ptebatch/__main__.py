from .cli import main

# Guarded: Dask's local workers start by spawn, which imports the parent's main module again.
if __name__ == "__main__":
    raise SystemExit(main())
