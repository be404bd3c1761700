// An MCP client from the official SDK, as an agent would run it: it is given
// only the MCP server's URL and its client credentials. Discovery (the 401's
// resource_metadata, RFC 9728 metadata, the authorization server's metadata)
// and the client_credentials token request with the resource (RFC 8707) are
// the SDK's own. Prints one JSON line: {ok, text} or {ok: false, error}.
//
//   node t/mcp/client.mjs URL ISSUER CLIENT_ID CLIENT_SECRET
//   node t/mcp/client.mjs URL --token TOKEN       (a fixed bearer token, no OAuth)
//
// NODE_EXTRA_CA_CERTS names the test CA of the authorization server.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const [url, issuerOrFlag, a, b] = process.argv.slice(2);
let options;
if (issuerOrFlag === '--token') {
  options = { requestInit: { headers: { Authorization: `Bearer ${a}` } } };
} else {
  const authProvider = new ClientCredentialsProvider({
    clientId: a, clientSecret: b, expectedIssuer: issuerOrFlag,
  });
  options = { authProvider };
}

const client = new Client({ name: 'gateway-test-client', version: '1.0.0' });
try {
  await client.connect(new StreamableHTTPClientTransport(new URL(url), options));
  const result = await client.callTool({ name: 'whoami', arguments: { say: 'hello' } });
  const token = options.authProvider?.tokens()?.access_token ?? null;
  console.log(JSON.stringify({ ok: true, text: result.content[0].text, token }));
  await client.close();
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e?.message ?? e), code: e?.code ?? null }));
  process.exitCode = 0;
}
process.exit();
