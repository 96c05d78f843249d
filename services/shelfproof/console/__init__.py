"""The console's side of the services: who the people are and their keys, typed gRPC clients, scanner
input, and gRPC errors as sentences. The Streamlit pages in ``ui/`` use only this package."""
