// The daemon's control socket (what mountctl talks to): server, routes, wire format and client.
export type { DaemonContext } from './types.js';
export { startControlServer, type ControlServer } from './server.js';
export { ROUTES, findRoute, type Route, type ArgSpec, type StatusResult, type StatResult, type KeyView } from './routes.js';
export { PROTOCOL_VERSION, MAX_REQUEST_BYTES, ControlErrorCode, type ControlRequest, type ControlResponse, type ControlErrorBody } from './protocol.js';
export { callControl, defaultSocketPath, ControlError, CONTROL_SOCKET_NAME } from './client.js';
