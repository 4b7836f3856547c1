/** A LoggerService that keeps its lines, for assertions (and never prints). */
import type { LoggerService } from '@backstage/backend-plugin-api';

export type LogLine = { level: string; message: string };

export class TestLogger implements LoggerService {
  constructor(readonly lines: LogLine[] = []) {}

  error(message: string): void {
    this.lines.push({ level: 'error', message });
  }
  warn(message: string): void {
    this.lines.push({ level: 'warn', message });
  }
  info(message: string): void {
    this.lines.push({ level: 'info', message });
  }
  debug(message: string): void {
    this.lines.push({ level: 'debug', message });
  }
  child(): LoggerService {
    return new TestLogger(this.lines);
  }
  text(): string {
    return this.lines.map(line => `${line.level}: ${line.message}`).join('\n');
  }
}
