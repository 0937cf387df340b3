"""Local HTTP stand-ins for the LLM provider APIs (see ``tests.stubs.server``)."""
