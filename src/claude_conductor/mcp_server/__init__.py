"""Conductor's Model Context Protocol server (``conductor mcp``): ``server`` wires the tools
(``tools``, over ``client/``) into the official SDK's ``MCPServer`` on stdio."""
