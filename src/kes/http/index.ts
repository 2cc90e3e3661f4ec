// kesd's HTTP layer: the KES API v1 over HTTPS with mTLS, policies, audit log and metrics.

export { startKesServer, applyOverrides } from './server.js';
export type { KesServer, KesServerOptions, KesLogLevel, RouteOverride } from './server.js';
export { ROUTES, MAX_BODY, matchRoute, describeRoutes } from './routes.js';
export type { ApiEntry, HttpMethod, Reply, Route, RouteContext, RouteDeps } from './routes.js';
export { createAuditSink } from './audit.js';
export type { AuditEvent, AuditSink, AuditTarget } from './audit.js';
export { HttpError, KEY_DISABLED_STATUS, KesMessage, errorBody, toHttpError } from './errors.js';
