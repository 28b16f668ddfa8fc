//! peapod's `wasi:sockets/ip-name-lookup` for components, answered by [`crate::wasm::names`]: the
//! other pods by name, the host's resolver asked from the host's network namespace.
//!
//! It replaces wasmtime-wasi's, which asks the host's resolver from the guest's thread — inside
//! the pod's network namespace, where neither the pods' names nor a loopback stub resolver
//! (systemd-resolved's 127.0.0.53) are. The interface is the WIT one: `resolve-addresses` gives a
//! stream, `resolve-next-address` says `would-block` until the answer is there, and
//! `subscribe` gives a pollable ready when it is.

use std::net::IpAddr;
use std::task::Poll;

use tokio::sync::oneshot;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress};
use wasmtime_wasi::p2::{DynPollable, Network, Pollable, subscribe};

use crate::wasm::names::{Answer, Failure, Lookup, Names};
use wasmtime::component::ResourceTable;

/// The interface as wasmtime-wasi names it (its WIT package's version): the definitions below
/// replace its own there, and components built against any 0.2 version link to them.
const INTERFACE: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// A guest's `resolve-address-stream`.
pub(crate) struct Resolving(State);

enum State {
    Pending(oneshot::Receiver<Answer>),
    Done(Result<std::vec::IntoIter<IpAddr>, Failure>),
}

impl Resolving {
    fn new(lookup: Lookup) -> Resolving {
        Resolving(match lookup {
            Lookup::Ready(a) => State::Done(a.map(Vec::into_iter)),
            Lookup::Pending(rx) => State::Pending(rx),
        })
    }

    /// The answer, if it is there.
    fn poll(&mut self) -> Poll<&mut Result<std::vec::IntoIter<IpAddr>, Failure>> {
        if let State::Pending(rx) = &mut self.0 {
            let answer = match rx.try_recv() {
                Ok(a) => a,
                Err(oneshot::error::TryRecvError::Empty) => return Poll::Pending,
                Err(oneshot::error::TryRecvError::Closed) => Err(Failure::Temporary),
            };
            self.0 = State::Done(answer.map(Vec::into_iter));
        }
        match &mut self.0 {
            State::Done(d) => Poll::Ready(d),
            State::Pending(_) => unreachable!("answered above"),
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Resolving {
    async fn ready(&mut self) {
        if let State::Pending(rx) = &mut self.0 {
            let answer = rx.await.unwrap_or(Err(Failure::Temporary));
            self.0 = State::Done(answer.map(Vec::into_iter));
        }
    }
}

fn code(f: Failure) -> ErrorCode {
    match f {
        Failure::InvalidArgument => ErrorCode::InvalidArgument,
        Failure::Unresolvable => ErrorCode::NameUnresolvable,
        Failure::Temporary => ErrorCode::TemporaryResolverFailure,
    }
}

/// What the interface needs of a store's data: the pod's names and the store's resource table.
pub(crate) trait LookupView: Send + 'static {
    fn parts(&mut self) -> (&Names, &mut ResourceTable);
}

/// Replaces wasmtime-wasi's `ip-name-lookup` in `linker` (which has it already).
pub(crate) fn add_to_linker<T: LookupView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut i = linker.instance(INTERFACE)?;
    i.resource(
        "resolve-address-stream",
        ResourceType::host::<Resolving>(),
        |mut store, rep| {
            store
                .data_mut()
                .parts()
                .1
                .delete(Resource::<Resolving>::new_own(rep))?;
            Ok(())
        },
    )?;
    i.func_wrap(
        "resolve-addresses",
        |mut store, (network, name): (Resource<Network>, String)| {
            let (names, table) = store.data_mut().parts();
            // The network handle is the capability to look up names: it must be a real one.
            table.get(&network)?;
            let mut stream = Resolving::new(names.lookup(&name));
            // Fail at once where the answer is there already (as wasmtime-wasi does).
            if let Poll::Ready(Err(f)) = stream.poll() {
                return Ok((Err(code(*f)),));
            }
            Ok((Ok(table.push(stream)?),))
        },
    )?;
    i.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store, (stream,): (Resource<Resolving>,)| {
            let stream = store.data_mut().parts().1.get_mut(&stream)?;
            Ok((match stream.poll() {
                Poll::Pending => Err(ErrorCode::WouldBlock),
                Poll::Ready(Ok(ips)) => Ok(ips.next().map(IpAddress::from)),
                Poll::Ready(Err(f)) => Err(code(*f)),
            },))
        },
    )?;
    i.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store,
         (stream,): (Resource<Resolving>,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            Ok((subscribe(store.data_mut().parts().1, stream)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
