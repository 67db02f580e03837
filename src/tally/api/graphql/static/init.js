// Tally's GraphiQL page: starts GraphiQL against this server's /graphql.
// A file of its own, not an inline script: the page's Content-Security-Policy
// allows scripts from this origin only.
(function () {
  "use strict";
  var fetcher = GraphiQL.createFetcher({ url: "/graphql" });
  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultHeaders: '{\n  "Authorization": "Bearer <an API key or access token>"\n}',
      defaultEditorToolsVisibility: "headers",
      shouldPersistHeaders: false,
    })
  );
})();
