// The seed's cluster example (strong-cluster-express-store's README, "Using
// strong-cluster-express-store"), run on this package. Changed from the seed's text: the
// `require` line of the store; express 3's built-in middleware, which express 4 no longer
// has, taken from its own modules (`express.cookieParser()` -> `require('cookie-parser')()`,
// `express.session(` -> `session(`); and the port, from PORT when it is set.
//
//   node examples/cluster-hello.js   # then: curl -c jar -b jar http://127.0.0.1:8080/hello
'use strict';
var express = require('express');
var cluster = require('cluster');
var numCPUs = require('os').cpus().length;
var session = require('express-session');
var ClusterStore = require('cluster-session-store')(session);

if (cluster.isMaster) {
    // The cluster master executes this code

    ClusterStore.setup();

    // Create a worker for each CPU
    for (var i=0; i<numCPUs; i++) {
        cluster.fork();
      }

    cluster.on('online', function(worker) {
          console.log('Worker ' + worker.id + ' is online.');
        });

    cluster.on('exit', function(worker, code, signal) {
          console.log('worker ' + worker.id + ' died with signal',signal);
        });
} else {
    // The cluster workers execute this code

    var app = express();
    app.use(require('cookie-parser')());

    app.use(session(
            { store: new ClusterStore(), secret: 'super-cool' }
          ));

    app.get('/hello', function(req, res) {
          var msg;
          if (req.session.visited)
            msg = {msg: 'Hello again from worker '+cluster.worker.id};
          else
            msg = {msg: 'Hello from worker '+cluster.worker.id};

          req.session.visited = '1';
          res.json(200, msg);
        });
    app.listen(process.env.PORT || 8080);
}
