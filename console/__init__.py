"""The web console: a demo client (`/console/`) and an operator view over this node's metrics,
served as static files by the same aiohttp app; plus the Socket.IO Admin UI hook."""
