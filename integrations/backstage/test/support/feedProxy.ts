/**
 * A proxy in front of the real `choreo-ingest serve` that can rewrite the feed's answers: the
 * tests use it to serve an entity body the catalog refuses.
 */
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FeedEntity } from '../../src/feedClient';

export type FeedProxy = {
  url: string;
  /** Rewrites each entity body of `GET /entities` and `POST /entities/batch` (undefined: none). */
  rewrite: ((entity: FeedEntity) => FeedEntity) | undefined;
  stop(): Promise<void>;
};

export async function startFeedProxy(target: string): Promise<FeedProxy> {
  const proxy: FeedProxy = {
    url: '',
    rewrite: undefined,
    stop: async () => {},
  };
  const server: Server = createServer(async (request, response) => {
    try {
      const chunks: Buffer[] = [];
      for await (const chunk of request) {
        chunks.push(chunk as Buffer);
      }
      const headers: Record<string, string> = {};
      for (const name of ['authorization', 'content-type', 'accept']) {
        const value = request.headers[name];
        if (typeof value === 'string') {
          headers[name] = value;
        }
      }
      const answer = await fetch(`${target}${request.url}`, {
        method: request.method,
        headers,
        body: chunks.length ? Buffer.concat(chunks) : undefined,
      });
      let text = await answer.text();
      const route = request.url?.split('?')[0];
      const rewrite = proxy.rewrite;
      if (answer.ok && rewrite && (route === '/entities' || route === '/entities/batch')) {
        const document = JSON.parse(text) as { entities: FeedEntity[] };
        document.entities = document.entities.map(entity => rewrite(entity));
        text = JSON.stringify(document);
      }
      response.writeHead(answer.status, { 'Content-Type': 'application/json' });
      response.end(text);
    } catch (error) {
      response.writeHead(502, { 'Content-Type': 'application/json' });
      response.end(JSON.stringify({ error: String(error) }));
    }
  });
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  proxy.stop = () => new Promise(resolve => server.close(() => resolve()));
  return proxy;
}
