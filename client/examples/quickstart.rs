//! Creates a topic, writes keyed records with the Producer, reads them back with the
//! Consumer. Needs a running server: `cargo run --release --bin pubsubd -- standalone`.
//!
//! Run with `cargo run -p pubsub-client --example quickstart [SERVER]`; the server is
//! the argument, else `PUBSUB_SERVER` (as for the CLI), else the standalone default.
//! A failure is printed as one `error: ...` line, with exit code 1.

use std::time::Duration;

use pubsub_client::{
    Admin, Client, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig, ProducerRecord,
    StartPosition,
};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), pubsub_client::Error> {
    let server = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PUBSUB_SERVER").ok())
        .unwrap_or_else(|| pubsub_client::DEFAULT_ADDRESS.to_string());
    let client = Client::connect(&server).await?;

    let admin = Admin::new(client.clone());
    match admin
        .create_topic(NewTopic {
            name: "quickstart".into(),
            partitions: 3,
            ..NewTopic::default()
        })
        .await
    {
        Ok(_) => println!("created topic quickstart"),
        Err(pubsub_client::Error::AlreadyExists { .. }) => {
            println!("topic quickstart already exists")
        }
        Err(e) => return Err(e),
    }

    // Send without waiting for each record; wait for the deliveries at the end.
    let producer = Producer::new(client.clone(), "quickstart", ProducerConfig::default()).await?;
    let mut deliveries = Vec::new();
    for i in 0..100 {
        let record = ProducerRecord::keyed(format!("user-{}", i % 5), format!("event {i}"));
        deliveries.push(producer.send(record).await?);
    }
    producer.flush().await?;
    for delivery in deliveries {
        delivery.wait().await?;
    }
    println!("wrote 100 records");

    let mut consumer = Consumer::new(client, "quickstart", ConsumerConfig::default());
    consumer.assign_all(StartPosition::Earliest).await?;
    let mut read = 0;
    loop {
        let records = consumer.poll(Duration::from_millis(500)).await?;
        if records.is_empty() {
            break;
        }
        for record in &records {
            let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default());
            println!(
                "partition {} offset {}: {value}",
                record.partition, record.offset
            );
        }
        read += records.len();
    }
    println!("read {read} records");
    Ok(())
}
