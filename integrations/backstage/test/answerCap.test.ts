/**
 * An answer is read up to `MAX_ANSWER_BYTES`: past it the request fails naming the route and
 * what may be wrong, instead of the backend holding whatever something at `baseUrl` sends.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FeedClient, FeedError } from '../src';
import { AnswerTooLarge, MAX_ANSWER_BYTES, readCapped } from '../src/feedClient';

const streamOf = (chunks: string[]) =>
  new Response(
    new ReadableStream({
      start(controller) {
        chunks.forEach(chunk => controller.enqueue(new TextEncoder().encode(chunk)));
        controller.close();
      },
    }),
  );

test('an answer without a length is read whole up to the limit, and no further', async () => {
  const parts = ['\ufeff{"a":', '"é"}']; // 13 bytes: a BOM (3), é (2)
  expect(await readCapped(streamOf(parts), 13)).toBe('{"a":"é"}');
  await expect(readCapped(streamOf([...parts, ' ']), 13)).rejects.toThrow(AnswerTooLarge);
});

test('an answer that declares more than the limit is refused before it is read', async () => {
  const server = createServer((_request, response) => {
    response.writeHead(200, {
      'Content-Type': 'application/json',
      'Content-Length': String(MAX_ANSWER_BYTES + 1),
    });
    response.write('{"storeId":"s"'); // and never the rest: the client must not wait for it
  });
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const client = new FeedClient({ baseUrl: `http://127.0.0.1:${port}`, timeoutMs: 5000 });
    const failed = await client.changes(0, 10).catch(error => error);
    expect(failed).toBeInstanceOf(FeedError);
    expect(failed.message).toBe(
      'choreo-ingest GET /changes answered HTTP 200: the answer is over 256 MiB, more than ' +
        'serve sends: is baseUrl the address of choreo-ingest serve?',
    );
  } finally {
    server.closeAllConnections();
    await new Promise(resolve => server.close(resolve));
  }
});
