The pylon-ai twistd service: OpenAI and Anthropic compatible routes with translation both ways, WebSocket endpoint, Prometheus metrics, chat page, graceful stop.
