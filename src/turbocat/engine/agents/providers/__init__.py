"""The two chat protocols the ``llm`` kind speaks, over httpx (no vendor SDKs).

``common`` holds the protocol-neutral conversation, the HTTP exchange (plain and SSE) and the
mapping of provider failures onto ``AgentError``; ``openai`` and ``anthropic`` translate a
``ChatRequest`` into their wire format and their replies (whole or streamed) back.
"""
