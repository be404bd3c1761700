// An MCP server from the official SDK (Streamable HTTP, stateless, plain HTTP,
// no OAuth of its own): the upstream the gateway protects in t/203. One tool,
// "whoami", that answers with the Authorization header it received (so the
// test sees what passed the gateway) and its argument.
//
//   node t/mcp/server.mjs PORT_FILE      listens on a free loopback port and
//                                        writes the port to PORT_FILE
import { writeFileSync, renameSync } from 'node:fs';
import * as http from 'node:http';

import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';

const portFile = process.argv[2];

function makeServer(req) {
  const server = new McpServer({ name: 'gateway-test-server', version: '1.0.0' });
  server.registerTool(
    'whoami',
    { description: 'Echoes its argument and the credentials it saw', inputSchema: { say: z.string() } },
    async ({ say }) => ({
      content: [{ type: 'text', text: JSON.stringify({ say, authorization: req.headers.authorization ?? null }) }],
    }),
  );
  return server;
}

const httpServer = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  let body;
  try { body = text ? JSON.parse(text) : undefined; } catch { body = undefined; }
  const server = makeServer(req);
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on('close', () => { transport.close(); server.close(); });
  await server.connect(transport);
  await transport.handleRequest(req, res, body);
});

httpServer.listen(0, '127.0.0.1', () => {
  const { port } = httpServer.address();
  writeFileSync(`${portFile}.tmp`, String(port));
  renameSync(`${portFile}.tmp`, portFile);
});
