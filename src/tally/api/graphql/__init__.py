"""GraphQL at ``/graphql``: an entry point beside REST, over the same services.

``http`` admits a request as REST does and runs one operation; ``schema``
builds the query and mutation roots (``queries``, ``mutations``) over the
object ``types``; ``context`` carries the caller and the request's dataloaders;
``limits`` measures a document before it runs; ``errors`` gives every error
the contract's code; ``graphiql`` serves the GraphiQL page from vendored files.
docs/graphql.md describes it.
"""
