//! The gRPC codec of every service and client: prost's encoding, with the message's
//! room reserved in the outgoing buffer before it is written. tonic's prost codec
//! writes into a buffer that starts small and doubles as it fills, so a 256 KiB push
//! message or fetch response was copied about twice over on the way; reserving its
//! encoded length first makes it one write. Decoding is prost's own.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{EncodeBuf, Encoder};
use tonic_prost::ProstCodec;

/// Encodes `T` and decodes `U` with prost (see the module's comment).
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec {
            _types: PhantomData,
        }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ReservingEncoder<T>;
    type Decoder = <ProstCodec<T, U> as tonic::codec::Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ReservingEncoder { _type: PhantomData }
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::default().decoder()
    }
}

/// Writes a prost message after reserving its encoded length.
#[derive(Debug, Clone)]
pub struct ReservingEncoder<T> {
    _type: PhantomData<T>,
}

impl<T: Message> Encoder for ReservingEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode_raw(buf);
        Ok(())
    }
}
