// The seed README's "Configuration for Express 4.x" and "Setting up the master process",
// together, run on this package: only the `require` lines of the store changed (and, to make
// a server of the snippets, a /hello route and the port, from PORT when it is set).
//
//   node examples/express4.js   # then: curl -c jar -b jar http://127.0.0.1:8080/hello
'use strict';

// The master process only executes this code
var cluster = require('cluster');
var numCPUs = require('os').cpus().length;

require('cluster-session-store').setup();

if (cluster.isMaster) {
  // fork the workers
  for (var i = 0; i < numCPUs; i++) {
      cluster.fork();
  }
}

// setup the workers
if (cluster.isWorker) {
  var express = require('express');
  var cookieParser = require('cookie-parser');
  var session = require('express-session');
  var bodyParser = require('body-parser');
  var ClusterStore = require('cluster-session-store')(session);

  var app = express();
  app
    .use(cookieParser())
    .use(session({ store: new ClusterStore(), secret: 'keyboard cat' }))
    .use(bodyParser.json());

  app.get('/hello', function(req, res) {
    var visits = (req.session.visits || 0) + 1;
    req.session.visits = visits;
    res.json({ worker: cluster.worker.id, visits: visits });
  });
  app.listen(process.env.PORT || 8080);
}
