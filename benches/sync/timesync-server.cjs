// npm timesync 1.0.11's own server, as its README runs it: `node timesync-server.cjs PORT`.
// Prints {"listen": PORT} once it listens; ends when its standard input closes.
const timesyncServer = require('timesync/server');

const server = timesyncServer.createServer();
server.keepAliveTimeout = 60000;
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ listen: server.address().port }));
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
